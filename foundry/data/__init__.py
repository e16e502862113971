"""Datasets as manifests + WebDataset tar shards, deterministic mixing plans, and batch iteration.

Layers, bottom up: `config` (torch-free dataclasses), `manifest` (manifest.jsonl + `DataError`), `shards`
(tar header index, seek-based sample reads), `plan` (which sample goes where, per checkpoint window),
`loader` (decode + collate in DataLoader workers), then modalities: `text` (+ `tokenizer`, `make_text`).
"""
