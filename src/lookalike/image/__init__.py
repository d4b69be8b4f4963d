"""Files -> decoded images: finding image files, decoding them by content (bounded memory),
resizing and normalising for a network, regions and object localization of a query."""
