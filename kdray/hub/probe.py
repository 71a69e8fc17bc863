"""One look at the Hugging Face hub before a study that needs it starts: one request with a
short timeout (or, with HF_HUB_OFFLINE, a look in the local cache), one line when it fails,
nothing written: no download, no lock file, no retries."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Sequence

PROBE_SECONDS = 3.0


def hub_problem(hub_ids: Sequence[str], timeout: float = PROBE_SECONDS) -> str | None:
    """Why the hub models `hub_ids` cannot be had, in one line with the fix; None when they
    can: with HF_HUB_OFFLINE each must be in the local cache, else the hub (HF_ENDPOINT) must
    answer one request within `timeout` seconds (any HTTP answer counts)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return _offline_problem(hub_ids, constants.HF_HUB_CACHE)
    return _reach_problem(constants.ENDPOINT, timeout)


def _offline_problem(hub_ids: Sequence[str], cache: str) -> str | None:
    """HF_HUB_OFFLINE: the first model not in the local cache, named."""
    from huggingface_hub import try_to_load_from_cache

    missing = [i for i in hub_ids if not isinstance(try_to_load_from_cache(i, "config.json"), str)]
    if not missing:
        return None
    more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    return (
        f"HF_HUB_OFFLINE is set and {missing[0]}{more} is not in the Hugging Face cache "
        f"({cache}): download it where the hub is reachable (hf download {missing[0]}) or "
        "unset HF_HUB_OFFLINE"
    )


def _reach_problem(endpoint: str, timeout: float) -> str | None:
    """The hub does not answer one HEAD request: why, in one line."""
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout)
    except urllib.error.HTTPError:
        return None  # it answered
    except (OSError, ValueError) as error:  # URLError, a timeout, a malformed HF_ENDPOINT
        reason = getattr(error, "reason", None) or error
        return (
            f"the Hugging Face hub ({endpoint}) does not answer ({reason}): the paper preset "
            "downloads its models (and without --data-dir its data) from it; check the network "
            "or HTTPS_PROXY, or set HF_HUB_OFFLINE=1 with the models in the local cache"
        )
    return None
