"""Vectors -> nearest ids: the codec and index contracts (:mod:`.base`), the exact scan, the
FAISS approximate index kept beside the store (:mod:`.persistent`), and the PCA codec."""
