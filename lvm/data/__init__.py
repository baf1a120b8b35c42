"""Token shards and the streaming DataModule."""
