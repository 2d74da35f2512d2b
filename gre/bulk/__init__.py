"""Bulk classification and feature extraction over many files: ``gre classify`` here, and
``gre.spark`` on a cluster, both writing the rows of :mod:`gre.bulk.rows`."""
