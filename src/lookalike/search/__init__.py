"""The one search path (:mod:`.engine`): snapshots of what a search reads, re-ranking,
category-first search and the models fitted on the collection."""
