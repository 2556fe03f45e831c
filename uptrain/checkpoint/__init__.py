"""The ground floor: checkpoints on disk and on the Hub.

Reading weights (safetensors shards, pickle when allowed, GGUF), the shard writer, Hub ids and
snapshot download, side files, atomic output directories, the provenance record (uptrain.json),
and loading a model and tokenizer with transformers. It imports nothing else of uptrain but
`errors`, so every other floor can use it.
"""
