"""The chaos soak (`make soak`): not part of `make test` (pytest's testpaths do not include it)."""
