"""Tests of gre.bulk: gre classify's inputs, writers and pipeline."""
