"""KV-cache sampling and visual prompting."""
