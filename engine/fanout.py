"""Splitting a multi-user request by the owner of each user's partition, and merging the answers.

With several workers in a group, `POST /v1/blocks:batch` (api/batch.py) and `POST /v1/render`
(api/render.py) answer the users whose `profiles` partition this process owns (or whose owner
is unknown) here, and ask each other owner once for its users (api/fanout.py sends the
sub-requests). The pure parts live here:

- `group`: the (de-duplicated) ids split into those answered here and, per owner URL, those
  asked there, each list in the request's order;
- `owner_results` (a batch's), `owner_renders` (a render's): an owner's decoded answer checked
  against what it was asked (hostile or broken answers are the owner's failure: its users are
  then answered here);
- `merge`: the entries back in the request's order;
- `owner_budget`: how much of the time left an owner is given (its `deadline_ms`) and how long
  its answer is waited for, leaving time to answer its users here if it does not come.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

T = TypeVar("T")

ENTRY_FIELDS = frozenset({"content", "fallback", "etag", "fallback_reason"})
RENDER_FIELDS = frozenset({"content", "fallback", "fallback_blocks", "error"})  # all of them
OWNER_SHARE = 0.6  # of the time left: the owner's deadline_ms (its users' blocks computed by then)
WAIT_SHARE = 0.8  # of the time left: how long its answer is waited for (the rest: answered here)
MIN_OWNER_MS = 20  # less time left than this for an owner: its users are answered here


@dataclass(frozen=True)
class Groups:
    local: list[str]  # answered here, in the request's order
    remote: dict[str, list[str]]  # owner URL -> its users, in the request's order


def group(ids: Sequence[str], owner_of: Callable[[str], str | None]) -> Groups:
    """`ids` by owner: None (this process, or unknown) is answered here. Duplicates are kept
    where they are (the caller de-duplicates: each id is looked up as often as it occurs)."""
    local: list[str] = []
    remote: dict[str, list[str]] = {}
    for uid in ids:
        owner = owner_of(uid)
        if owner is None:
            local.append(uid)
        else:
            remote.setdefault(owner, []).append(uid)
    return Groups(local, remote)


def owner_results(answer: Any, asked: Sequence[str]) -> dict[str, dict[str, Any]] | str:
    """The entries of an owner's decoded batch answer (`{"results": {user_id: entry}}`) for the
    users `asked`, or why the answer cannot be used: not that shape, a user missing or not asked
    for, or an entry that is not `{"content": str, "fallback": bool, "etag": str}` with an
    optional `fallback_reason` str."""
    if not isinstance(answer, dict) or set(answer) != {"results"}:
        return 'not an object of "results"'
    results = answer["results"]
    problem = _results_problem(results, asked)
    if problem is not None:
        return problem
    for entry in results.values():
        if not isinstance(entry, dict) or not set(entry) <= ENTRY_FIELDS:
            return "an entry is not an object of content, fallback, etag"
        reason = entry.get("fallback_reason", "")
        if not (
            isinstance(entry.get("content"), str)
            and isinstance(entry.get("fallback"), bool)
            and isinstance(entry.get("etag"), str)
            and isinstance(reason, str)
        ):
            return "an entry's content, fallback, etag or fallback_reason has the wrong type"
    return cast(dict[str, dict[str, Any]], results)


def _results_problem(results: Any, asked: Sequence[str]) -> str | None:
    if not isinstance(results, dict):
        return '"results" is not an object'
    if len(results) != len(asked) or any(uid not in results for uid in asked):
        return f"{len(results)} results for {len(asked)} users, or other users"
    return None


def owner_renders(answer: Any, asked: Sequence[str]) -> dict[str, dict[str, Any]] | str:
    """The messages of an owner's decoded render answer (`{"results": {user_id: entry},
    "errors": n}`) for the recipients `asked`, or why the answer cannot be used: not that shape,
    a recipient missing or not asked for, an entry that is not `{"content": str | null,
    "fallback": bool, "fallback_blocks": [str], "error": str | null}` (`content` null only with
    an `error`), or `errors` not the number of entries with an error."""
    if not isinstance(answer, dict) or set(answer) != {"results", "errors"}:
        return 'not an object of "results" and "errors"'
    results = answer["results"]
    problem = _results_problem(results, asked)
    if problem is not None:
        return problem
    errors = 0
    for entry in results.values():
        if not isinstance(entry, dict) or set(entry) != RENDER_FIELDS:
            return "an entry is not an object of content, fallback, fallback_blocks, error"
        content, error, names = entry["content"], entry["error"], entry["fallback_blocks"]
        if not (
            (isinstance(content, str) or (content is None and error is not None))
            and isinstance(entry["fallback"], bool)
            and (error is None or isinstance(error, str))
            and isinstance(names, list)
            and all(isinstance(name, str) for name in names)
        ):
            return "an entry's content, fallback, fallback_blocks or error has the wrong type"
        errors += error is not None
    if type(answer["errors"]) is not int or answer["errors"] != errors:
        return f'"errors" is not the {errors} entries with an error'
    return cast(dict[str, dict[str, Any]], results)


def merge(ids: Sequence[str], *answers: Mapping[str, T]) -> list[T]:
    """The entry of each of `ids`, in their order, from the first of `answers` that has it;
    KeyError for an id none has (every user gets an answer: a caller's bug)."""
    out: list[T] = []
    for uid in ids:
        for answer in answers:
            if uid in answer:
                out.append(answer[uid])
                break
        else:
            raise KeyError(uid)
    return out


def owner_budget(left: float) -> tuple[int, float] | None:
    """For `left` seconds until the request's deadline: the `deadline_ms` an owner is sent and
    the seconds its answer is waited for, or None when too little is left to ask (its users are
    answered here)."""
    owner_ms = int(left * OWNER_SHARE * 1000)
    if owner_ms < MIN_OWNER_MS:
        return None
    return min(owner_ms, 10_000), left * WAIT_SHARE
