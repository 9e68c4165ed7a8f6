"""What a failed download means: one clear sentence per way it fails (gated, missing, refused token,
no network, full disk), translated once at the Hub's boundary; never the token, never a signed URL.
"""

from __future__ import annotations

from proxy.lifecycle.errors import DownloadError
from proxy.lifecycle.redact import redact_urls


def translate(
    exc: BaseException,
    repo: str,
    revision: str | None,
    token: str | None,
    endpoint: str,
    filename: str | None = None,
) -> DownloadError:
    """One clear message per way a download fails; never the token."""
    from huggingface_hub import errors

    at = f" at revision {revision}" if revision else ""
    what = f"{repo}/{filename}" if filename else repo
    if isinstance(exc, errors.GatedRepoError):
        if token:
            return DownloadError(
                f"{repo} is a gated repository and the token has no access to it: accept its conditions on "
                "the Hub with the account that owns the token"
            )
        return DownloadError(
            f"{repo} is a gated repository: it needs a Hugging Face token of an account that accepted its "
            "conditions (add one with `llmserver vault add` or the admin console, then choose it for the model)"
        )
    if isinstance(exc, errors.RevisionNotFoundError):
        return DownloadError(f"{repo} has no revision {revision!r}")
    if isinstance(exc, errors.EntryNotFoundError) and not isinstance(exc, errors.LocalEntryNotFoundError):
        return DownloadError(f"{what} does not exist{at}")
    if isinstance(exc, errors.RepositoryNotFoundError):
        extra = " or the token has no access to it" if token else " (or it is private: choose a token for it)"
        return DownloadError(f"the repository {repo} was not found{extra}")
    if isinstance(exc, errors.HfHubHTTPError) and exc.response is not None and exc.response.status_code == 401:
        return DownloadError(f"the Hub refused the Hugging Face token for {repo}: it is invalid or expired")
    if isinstance(exc, (errors.OfflineModeIsEnabled, errors.LocalEntryNotFoundError, ConnectionError)) or _is_network(
        exc
    ):
        return DownloadError(
            f"cannot reach the Hugging Face Hub at {endpoint} to fetch {what} (no network?). Set HF_HUB_OFFLINE=1 "
            "to use files already in LLMSERVER_HF_CACHE, or register the model with a local path (--path)"
        )
    if isinstance(exc, OSError) and exc.errno == 28:
        return DownloadError(f"the disk is full while downloading {what}: free some space and pull again")
    return DownloadError(f"downloading {what} failed: {type(exc).__name__}: {redact_urls(_first_line(exc))}")


def _is_network(exc: BaseException) -> bool:
    import httpx2

    return isinstance(exc, (httpx2.ConnectError, httpx2.TimeoutException, httpx2.RemoteProtocolError))


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]
