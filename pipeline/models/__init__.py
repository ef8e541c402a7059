"""Models more than one stage uses (embedder, tokenizer, proxy LM, n-gram LM). Loaded lazily, offline."""
