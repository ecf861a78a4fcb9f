"""The tagging pipeline, in the order it runs; no module here imports `Tagger`.

- `state.py`: `TaggerState`, everything the pipeline reads but the encoder (one snapshot).
- `search.py`: nearest prototypes and items of the query embeddings (`Neighbours`).
- `features.py`: the reranker's features of each query's best candidate labels.
- `trees.py`, `rerank.py`: boosted trees as arrays and their walk; the `Reranker` over them.
- `scoring.py`: without a reranker, prototype similarity blended with a neighbour vote;
  thresholds.
- `tfidf.py`: TF-IDF label prototypes (two of the reranker's features).
- `tag.py`: `score`, the one entry point from embeddings to top-k labels, and `named`.
- `fit.py`: tuning the scoring and fitting the reranker on the validation split (build time).
- `labels.py`: label edits, functions from one state to the next.
"""
