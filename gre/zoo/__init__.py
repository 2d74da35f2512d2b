"""The model zoo: ``gre fetch NAME|URL`` downloads the files a model's config needs, resumably,
and installs each only once its checksum matches.

Modules, one concept each: :mod:`~gre.zoo.manifest` (what a name fetches and what is known of
each file), :mod:`~gre.zoo.verify` (checking a file against that, and installing it
atomically), :mod:`~gre.zoo.download` (HTTP with Range resumption), :mod:`~gre.zoo.archive`
(members out of a tarball), :mod:`~gre.zoo.progress` (the progress bar) and
:mod:`~gre.zoo.fetch` (a name or URL to files under ``--dir``); :mod:`~gre.zoo.errors` says
what can fail.
"""
