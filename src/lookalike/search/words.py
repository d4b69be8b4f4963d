"""Search by words over a fixed vocabulary: the model's ImageNet concepts and the collection's
own labels. Not free text: a word is found only if it names a concept.

* The vocabulary (:class:`Vocabulary`): the 1000 ImageNet classes of the built-in models,
  each under all its names (the synonyms of ``imagenet_classes.txt``: "laptop, laptop
  computer"), and the collection's labels (``--labels``, class folders). A label wins over
  an ImageNet concept of the same name: it is what this collection calls its images.
* Matching (:meth:`Vocabulary.match`): the words are split into terms at commas and ``+``;
  each term must name a concept (case, spaces, ``-`` and ``_`` ignored; a plural ``s`` or
  ``es`` may be dropped). A term that names several concepts ("crane": the bird and the
  machine) finds any of them. A term that names nothing raises :class:`UnknownWords`, which
  lists the nearest known names.
* Every concept is a linear score on the model's raw vectors: an ImageNet class's row of the
  head (:func:`lookalike.encode.imagenet.head_weights`), a label's row of the collection's
  category classifier (:mod:`lookalike.search.categories`). The collection's codec turns
  that row into a query vector of the common space
  (:meth:`lookalike.index.base.VectorCodec.direction`), which every index searches like a
  photo's vector: the result's score is the cosine of that direction and the image in the
  common space (docs/EVALUATION.md, "Search by words", measures this against the
  alternatives).
* Several terms: ``all`` searches the sum of their directions (images that score on each);
  ``any`` searches each concept and keeps every image at its best cosine.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from lookalike.errors import InvalidInput
from lookalike.search.categories import CategoryModel

#: How several terms combine: images that show all of them, or any one.
Match = Literal["all", "any"]
MATCHES: tuple[Match, ...] = ("all", "any")
#: Where a concept comes from.
Source = Literal["imagenet", "label"]
#: Linear rows on raw vectors -> unit query vectors (a codec's ``direction``).
DirectionMap = Callable[[np.ndarray], np.ndarray]
#: How many nearest known names an unknown word is answered with.
SUGGESTIONS = 5


def normalise(name: str) -> str:
    """``Golden_Retriever`` -> ``golden retriever``: lower case, one space between words."""
    return " ".join(re.sub(r"[_\-]", " ", name).lower().split())


@dataclass(frozen=True)
class Concept:
    """One thing a word can name: an ImageNet class (``key``: its index in the head) or a
    label of the collection (``key``: the label)."""

    name: str
    source: Source
    key: int | str
    synonyms: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "source": self.source, "synonyms": list(self.synonyms)}


@dataclass(frozen=True)
class Term:
    """A word or phrase of the query and the concepts it names (any of them)."""

    text: str
    concepts: tuple[Concept, ...]


@dataclass(frozen=True)
class WordQuery:
    """Words matched to concepts, and how the terms combine."""

    text: str
    terms: tuple[Term, ...]
    match: Match = "all"
    #: The ImageNet head's rows (None: the model has none), for the concepts' directions.
    head: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def concepts(self) -> list[Concept]:
        return [c for term in self.terms for c in term.concepts]


class UnknownWords(InvalidInput):
    """Words that name no concept; ``suggestions``: the nearest known names of each."""

    def __init__(self, unknown: dict[str, list[str]]) -> None:
        self.suggestions = unknown
        parts = []
        for word, near in unknown.items():
            hint = f"; nearest known names: {', '.join(near)}" if near else ""
            parts.append(f"no concept is called {word!r}{hint}")
        super().__init__(
            "; ".join(parts) + " (search by words knows a fixed vocabulary: "
            "`lookalike concepts` lists it)"
        )


@dataclass(frozen=True)
class Vocabulary:
    """What words can name in one collection."""

    concepts: tuple[Concept, ...]
    head: np.ndarray | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(
        cls, labels: Sequence[str], imagenet_names: Sequence[str], head: np.ndarray | None
    ) -> Vocabulary:
        """The collection's ``labels`` (those with a classifier) first, then the ImageNet
        classes when the model has a head (``head``)."""
        concepts = tuple(Concept(label, "label", label) for label in labels)
        if head is not None:
            concepts += imagenet_concepts(tuple(imagenet_names))
        return cls(concepts, head)

    @functools.cached_property
    def _by_name(self) -> dict[str, list[Concept]]:
        found: dict[str, list[Concept]] = {}
        labels = {normalise(c.name) for c in self.concepts if c.source == "label"}
        for concept in self.concepts:
            for name in concept.synonyms or (concept.name,):
                key = normalise(name)
                if concept.source == "imagenet" and key in labels:
                    continue  # the collection's own label of that name wins
                found.setdefault(key, []).append(concept)
        return found

    def match(self, text: str, match: Match = "all") -> WordQuery:
        """The concepts ``text`` names (see the module); :class:`UnknownWords` if a term
        names none, :class:`~lookalike.errors.InvalidInput` if there are no words."""
        if match not in MATCHES:
            raise InvalidInput(f"unknown match {match!r}: all or any")
        terms_text = [t.strip() for t in re.split(r"[,+]", text) if t.strip()]
        if not terms_text:
            raise InvalidInput("no words to search for")
        by_name = self._by_name
        terms, unknown = [], {}
        for word in terms_text:
            key = normalise(word)
            found = by_name.get(key)
            for suffix in ("s", "es"):
                if not found and key.endswith(suffix):
                    found = by_name.get(key.removesuffix(suffix))
            if found:
                terms.append(Term(word, tuple(found)))
            else:
                unknown[word] = difflib.get_close_matches(key, by_name, n=SUGGESTIONS)
        if unknown:
            raise UnknownWords(unknown)
        return WordQuery(text, tuple(terms), match, self.head)


@functools.cache
def imagenet_concepts(names: tuple[str, ...]) -> tuple[Concept, ...]:
    """The ImageNet classes as concepts, each under all its names (``"laptop, laptop
    computer"``: first the name shown)."""
    concepts = []
    for index, line in enumerate(names):
        synonyms = tuple(n.strip() for n in line.split(",") if n.strip())
        concepts.append(Concept(synonyms[0], "imagenet", index, synonyms))
    return tuple(concepts)


def linear_rows(query: WordQuery, classifier: CategoryModel | None) -> list[np.ndarray]:
    """Per term, the rows (one per concept) scoring raw vectors: the head's row of an ImageNet
    concept, the classifier's row of a label (:class:`~lookalike.errors.InvalidInput` if the
    collection no longer has that label)."""
    out = []
    for term in query.terms:
        rows = []
        for concept in term.concepts:
            if concept.source == "imagenet":
                assert query.head is not None  # matched only when the model has a head
                rows.append(query.head[int(concept.key)])
            elif classifier is not None and concept.key in classifier.classes:
                rows.append(classifier.coef[classifier.classes.index(str(concept.key))])
            else:
                raise InvalidInput(f"the collection has no label {concept.key!r} any more")
        out.append(np.stack(rows).astype(np.float32))
    return out


def query_directions(
    query: WordQuery, classifier: CategoryModel | None, direction: DirectionMap
) -> np.ndarray:
    """The unit query vectors of the common space to search (see the module): one for
    ``all`` (the sum of each term's directions), one per concept for ``any``."""
    per_term = [direction(rows) for rows in linear_rows(query, classifier)]
    if query.match == "any":
        return np.concatenate(per_term).astype(np.float32)
    total = sum(unit.sum(axis=0) for unit in per_term)
    total = np.asarray(total, dtype=np.float32)
    return (total / max(float(np.linalg.norm(total)), 1e-12))[None]
