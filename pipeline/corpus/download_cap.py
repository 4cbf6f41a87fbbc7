"""A size cap per downloaded image, for img2dataset (which reads every response into memory whole, with no limit).

img2dataset's ``download_image`` is replaced by one that refuses a response whose Content-Length exceeds the cap and
reads at most cap + 1 bytes otherwise, so a 300 MB non-image URL costs at most the cap in memory. img2dataset runs its
downloads in *spawned* processes, which do not inherit a patch made here: the run uses ``CappedDownloader`` (a subclass
defined in this module), and unpickling it in a worker imports this module, which installs the patch there too. The
cap travels to the workers in the environment (``TAILSTUDY_MAX_IMAGE_BYTES``).
"""
from __future__ import annotations

import contextlib
import io
import os
import urllib.request
from typing import Iterator

import img2dataset.downloader as _downloader

ENV = "TAILSTUDY_MAX_IMAGE_BYTES"
DEFAULT_MAX_IMAGE_MB = 32.0
TOO_LARGE = "download larger than the size cap"
_USER_AGENT = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:72.0) Gecko/20100101 Firefox/72.0"
_original = _downloader.download_image


def cap_bytes() -> int:
    return int(os.environ.get(ENV, int(DEFAULT_MAX_IMAGE_MB * (1 << 20))))


def capped_download_image(row, timeout, user_agent_token, disallowed_header_directives):
    """img2dataset's download_image with a size cap: -> (key, BytesIO or None, error message or None)."""
    key, url = row
    limit = cap_bytes()
    agent = _USER_AGENT + (f" (compatible; {user_agent_token}; +https://github.com/rom1504/img2dataset)"
                           if user_agent_token else "")
    try:
        request = urllib.request.Request(url, data=None, headers={"User-Agent": agent})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if disallowed_header_directives and _downloader.is_disallowed(response.headers, user_agent_token,
                                                                         disallowed_header_directives):
                return key, None, "Use of image disallowed by X-Robots-Tag directive"
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > limit:
                return key, None, f"{TOO_LARGE} ({int(length):,} > {limit:,} bytes)"
            data = response.read(limit + 1)  # never more than the cap (+1 to notice an overrun) in memory
            if len(data) > limit:
                return key, None, f"{TOO_LARGE} (more than {limit:,} bytes)"
        return key, io.BytesIO(data), None
    except Exception as err:  # img2dataset's contract: every failure is a message, never an exception
        return key, None, str(err)


class CappedDownloader(_downloader.Downloader):
    """img2dataset's Downloader; pickling it by this module's name makes spawned workers install the cap."""


def install() -> None:
    _downloader.download_image = capped_download_image


@contextlib.contextmanager
def capped(main_module, max_image_mb: float) -> Iterator[None]:
    """For one img2dataset.download call: the capped downloader and the cap in the environment."""
    before_env, before_cls = os.environ.get(ENV), main_module.Downloader
    os.environ[ENV] = str(int(max_image_mb * (1 << 20)))
    main_module.Downloader = CappedDownloader
    try:
        yield
    finally:
        main_module.Downloader = before_cls
        if before_env is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = before_env


install()  # in every process that imports this module: the run's and each spawned download worker
