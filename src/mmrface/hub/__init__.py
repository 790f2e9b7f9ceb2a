"""Published checkpoints one command away: the catalog, the downloader and the cache.

* `catalog`  the rows of `catalog.yaml`: URL(s), exact size, sha256 with its public source,
             licence, purpose, conversion, default fidelity (`mmrface weights list --remote`).
* `download` one streamed HTTP(S) download with a progress bar, HTTP Range resume, sha256 check,
             and one-line errors naming the URL and the manual alternative.
* `cache`    where fetched files live (`$MMRFACE_HOME`, else the platform cache directory) and the
             index of installed, converted files (a weights registry, read by `mmrface.weights`).
* `install`  fetch = download + convert once to our safetensors + record in the index.
* `choose`   `--weights auto` and fetch-on-first-use for the commands (restore, serve, evaluate).

Nothing here imports training code, and nothing touches the network unless a command asks to.
"""
