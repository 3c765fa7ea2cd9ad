"""Emerging themes: clusters of passages that no code fits, as candidate new codes."""

from __future__ import annotations

import numpy as np

MIN_WORDS = 12
# Words of spoken transcripts that say nothing about a theme.
TRANSCRIPT_FILLERS = ("laughs", "pause", "inaudible", "crosstalk", "erm", "er", "um", "yeah", "ve", "ll", "re",
                      "just", "really", "got", "get", "think", "know", "mean", "sort", "kind", "thing", "things",
                      "lot", "bit", "going", "went", "said", "say", "actually", "quite", "way", "people", "did",
                      "don", "didn", "doesn", "isn", "wasn", "person")


def choose_cluster_count(n_passages: int, *, most: int = 10) -> int:
    """About sqrt(n/2) clusters, 2 to ``most``: enough to separate themes, few enough for a team to read.

    Silhouette scores on sentence embeddings kept choosing 2 broad clusters on
    our sample round, which names no theme, so a size rule is used instead.
    """
    return int(max(1, min(most, n_passages, max(2, round((n_passages / 2) ** 0.5)))))


def cluster_themes(texts: list[str], vectors: np.ndarray, councils: list[str], *, clusters: int | None = None,
                   typical: int = 3, keywords: int = 6, code_centroids: np.ndarray | None = None,
                   code_ids=(), seed: int = 0) -> list[dict]:
    """Group uncoded passages and describe each group: size, councils, key terms, most typical passages,
    and the nearest existing code (so a team can tell a new theme from a code that needs better examples).

    Examples
    --------
    >>> import numpy as np
    >>> v = np.array([[1, 0], [0.98, 0.05], [0, 1], [0.05, 0.99]], dtype=float)
    >>> themes = cluster_themes(["bins bins", "bins day", "parks trees", "parks grass"], v, ["A"] * 4, clusters=2)
    >>> sorted(t["size"] for t in themes)
    [2, 2]
    """
    from sklearn.cluster import KMeans
    from sklearn.feature_extraction.text import TfidfVectorizer

    if len(texts) == 0:
        return []
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    k = clusters or choose_cluster_count(len(texts))
    k = max(1, min(k, len(texts)))
    model = KMeans(n_clusters=k, random_state=seed, n_init=10).fit(vectors)
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    tfidf = TfidfVectorizer(stop_words=sorted(ENGLISH_STOP_WORDS | set(TRANSCRIPT_FILLERS)), ngram_range=(1, 2),
                            token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z-]+\b")
    weights = tfidf.fit_transform(texts)
    terms = np.array(tfidf.get_feature_names_out())
    themes = []
    for cluster in range(k):
        members = np.flatnonzero(model.labels_ == cluster)
        centre = model.cluster_centers_[cluster]
        closeness = vectors[members] @ centre / max(np.linalg.norm(centre), 1e-12)
        order = members[np.argsort(-closeness, kind="stable")]
        term_weights = np.asarray(weights[members].mean(axis=0)).ravel()
        top_terms = terms[np.argsort(-term_weights, kind="stable")[:keywords]]
        theme = {"theme": 0, "size": int(len(members)), "councils": len({councils[i] for i in members}),
                 "key_terms": ", ".join(top_terms), "typical_passages": [texts[i] for i in order[:typical]],
                 "nearest_code": "", "nearest_code_similarity": None}
        if code_centroids is not None and len(code_ids):
            unit_centre = centre / max(np.linalg.norm(centre), 1e-12)
            similarity = code_centroids @ unit_centre
            best = int(np.argmax(similarity))
            theme["nearest_code"], theme["nearest_code_similarity"] = str(code_ids[best]), round(float(similarity[best]), 3)
        themes.append(theme)
    themes.sort(key=lambda t: (-t["size"], t["key_terms"]))
    for number, theme in enumerate(themes, start=1):
        theme["theme"] = number
    return themes
