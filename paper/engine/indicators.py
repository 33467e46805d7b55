"""Vectorized, causal indicators over bar columns, and the registry the engine computes them from.
Every built-in is prefix-stable bit for bit: f(x[:k]) == f(x)[:k] for all k (NaN in warm-up)."""

# How prefix stability is guaranteed: sums come from `np.cumsum` along rows of fixed-position
# blocks (a sequential accumulate, so the value at bar i depends only on bars 0..i, never on the
# array length; see `_window_sums`); rolling max/min are exact, so their evaluation order does
# not matter. Nothing uses pairwise `np.sum`/`np.mean` over a whole array or FFT convolution,
# whose rounding depends on the total length. No per-bar Python loops: every built-in is O(n)
# numpy (a few ms for 200k bars).
#
# Register a custom indicator with `@indicator("name")`: it is called as `fn(cols, **kwargs)` with
# `cols` a mapping of full-length float64 arrays (open/high/low/close/volume, plus int64 ts) and
# must return an array of the same length. Custom indicators are not trusted to be causal: the
# engine runs `check_causal` on them. Built-ins are registered with `builtin=True`.
from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import numpy as np

from paper.engine.bars import FIELDS
from paper.engine.strategy import IndicatorSpec

IndicatorFn = Callable[..., np.ndarray]
F = TypeVar("F", bound=IndicatorFn)

INDICATORS: dict[str, IndicatorFn] = {}
_BUILTIN: set[str] = set()
_SIGNATURES: dict[str, inspect.Signature] = {}


def indicator(name: str, *, builtin: bool = False) -> Callable[[F], F]:
    """Decorator: register `fn(cols, **kwargs) -> np.ndarray` under `name`.

    A name taken by another function is refused (built-ins included); re-registering the same
    function, or the same module-level function after a module reload, is allowed.
    """
    if not isinstance(name, str) or not name:
        raise ValueError("indicator name must be a non-empty string")

    def deco(fn: F) -> F:
        old = INDICATORS.get(name)
        if old is not None and old is not fn:
            if name in _BUILTIN:
                raise ValueError(f"indicator {name!r} is a built-in and cannot be replaced")
            if _origin(old) != _origin(fn):
                raise ValueError(f"indicator {name!r} is already registered by {_origin(old)}")
        INDICATORS[name] = fn
        _SIGNATURES[name] = inspect.signature(fn)
        if builtin:
            _BUILTIN.add(name)
        return fn

    return deco


def _origin(fn: Callable) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def is_builtin(name: str) -> bool:
    """True for the indicators shipped here (trusted causal; `check_causal` is not needed)."""
    return name in _BUILTIN


def compute_indicator(spec: IndicatorSpec, cols: Mapping[str, np.ndarray]) -> np.ndarray:
    """Evaluate `spec` over the full columns: a float64 array as long as the bars."""
    name = spec.fn
    fn = INDICATORS.get(name)
    if fn is None:
        known = ", ".join(sorted(INDICATORS))
        raise ValueError(f"unknown indicator {name!r}; known: {known}")
    kwargs = dict(spec.kwargs)
    try:
        _SIGNATURES[name].bind(cols, **kwargs)
    except TypeError as exc:
        raise ValueError(f"indicator {name!r}: bad arguments {kwargs!r}: {exc}") from None
    if name not in _BUILTIN:
        cols = _read_only(cols)  # a custom indicator must not write into the engine's arrays
    try:
        result = fn(cols, **kwargs)
    except Exception as exc:
        raise ValueError(f"indicator {name!r}: {exc}") from exc
    try:
        out = np.asarray(result, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"indicator {name!r} did not return numbers: {exc}") from None
    n = _length(cols)
    if out.shape != (n,):
        raise ValueError(f"indicator {name!r} returned shape {out.shape}, expected ({n},)")
    return out


def _read_only(cols: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    views = {}
    for key, values in cols.items():
        view = np.asarray(values).view()
        view.flags.writeable = False
        views[key] = view
    return views


def default_cut_points(n: int) -> list[int]:
    """A spread of prefix lengths to probe causality with: both ends, the middle, and around."""
    points = {1, 2, 3, 5, 10, 50, n // 4, n // 3, n // 2, (2 * n) // 3, (3 * n) // 4, n - 2, n - 1}
    return sorted(k for k in points if 0 < k < n)


def check_causal(
    fn_name: str,
    kwargs: Mapping[str, Any],
    cols: Mapping[str, np.ndarray],
    cut_points: Iterable[int] | None = None,
) -> None:
    """Raise ValueError unless the indicator on `cols[:k]` equals its full value `[:k]` bit for
    bit (NaN == NaN) for every k in `cut_points` (default: `default_cut_points`)."""
    spec = IndicatorSpec(fn_name, dict(kwargs))
    full = compute_indicator(spec, cols)
    n = len(full)
    points = default_cut_points(n) if cut_points is None else cut_points
    for k in sorted({int(k) for k in points}):
        if not 0 < k < n:
            continue
        prefix = {c: v[:k] for c, v in cols.items()}
        part = compute_indicator(spec, prefix)
        expected = full[:k]
        if not np.array_equal(part, expected, equal_nan=True):
            differs = ~((part == expected) | (np.isnan(part) & np.isnan(expected)))
            j = int(np.argmax(differs))
            raise ValueError(
                f"indicator {fn_name} is not causal: value at bar {j} changed "
                f"when bars after {k} were removed"
            )


# --- spec helpers: what strategies write in `indicators()` ------------------------------------


def sma(source: str, window: int) -> IndicatorSpec:
    """Simple moving average of `source` over `window` bars."""
    return IndicatorSpec("sma", {"source": source, "window": window})


def rsi(source: str, window: int) -> IndicatorSpec:
    """Cutler's RSI of `source` over `window` price changes."""
    return IndicatorSpec("rsi", {"source": source, "window": window})


def highest(source: str, window: int) -> IndicatorSpec:
    """Highest `source` over the last `window` bars, current bar included."""
    return IndicatorSpec("highest", {"source": source, "window": window})


def lowest(source: str, window: int) -> IndicatorSpec:
    """Lowest `source` over the last `window` bars, current bar included."""
    return IndicatorSpec("lowest", {"source": source, "window": window})


def roc(source: str, window: int) -> IndicatorSpec:
    """Rate of change of `source` over `window` bars, in percent."""
    return IndicatorSpec("roc", {"source": source, "window": window})


def stdev(source: str, window: int) -> IndicatorSpec:
    """Rolling population standard deviation of `source` over `window` bars."""
    return IndicatorSpec("stdev", {"source": source, "window": window})


# --- array kernels (1-D float64 in, same-length float64 out, NaN during warm-up) ----------------


def _nans(n: int) -> np.ndarray:
    return np.full(n, np.nan, dtype=np.float64)


def _blocks(v: np.ndarray, window: int) -> np.ndarray:
    """A fresh copy of `v` cut into rows of `window` (the last row padded with its first value)."""
    m = -(-len(v) // window)
    padded = np.empty(m * window, dtype=np.float64)
    padded[: len(v)] = v
    padded[len(v) :] = v[(m - 1) * window]
    return padded.reshape(m, window)


def _add_previous_tail(p: np.ndarray) -> np.ndarray:
    """In place: row b += (last of row b-1) - row b-1, i.e. the sums over the previous block's
    last window-1-r values, for rows of block-wise cumsums `p`. Returns the previous tails."""
    tail = np.zeros_like(p)
    np.subtract(p[:-1, -1:], p[:-1], out=tail[1:])
    p += tail
    return tail


# Windowed sums with bounded rounding. The series is cut into blocks of `window` bars at fixed
# positions (multiples of `window`, so a prefix has the same blocks); each block is summed with a
# sequential cumsum along its row. A window ending at column r of block b is the block's first
# r+1 values plus the last window-1-r values of block b-1: P[b, r] + (P[b-1, -1] - P[b-1, r]).
# Unlike one cumsum over the whole history, the error does not grow with the history length.
# For sums of x and x^2 each block is shifted by its first value (its anchor), which keeps the
# terms as small as the price moves over two blocks; the previous block's tail is re-anchored.
# Positions whose window is incomplete (the first window-1 bars) and the padding are discarded.


def _window_sums(v: np.ndarray, window: int) -> np.ndarray:
    """Sums of `v` over every full window, for the windows ending at window-1..len(v)-1."""
    p = _blocks(v, window)
    np.cumsum(p, axis=1, out=p)
    _add_previous_tail(p)
    return p.ravel()[window - 1 : len(v)]


def _anchored_window_moments(x: np.ndarray, window: int, squares: bool):
    """Per block row: (anchor, S1, S2), S1/S2 the sums of (x - anchor) and (x - anchor)^2 over the
    window ending at each position (S2 None unless `squares`). Anchor: first value of the block."""
    d = _blocks(x, window)
    anchor = d[:, :1].copy()
    d -= anchor
    delta = np.zeros_like(anchor)  # previous anchor - this anchor (0 for the first block)
    np.subtract(anchor[:-1], anchor[1:], out=delta[1:])
    count = np.arange(window - 1, -1, -1, dtype=np.float64)  # values taken from block b-1
    s2 = None
    if squares:
        s2 = d * d
        np.cumsum(s2, axis=1, out=s2)
        _add_previous_tail(s2)
    s1 = d
    np.cumsum(s1, axis=1, out=s1)
    tail1 = _add_previous_tail(s1)  # S1 so far: previous tail still about the previous anchor
    if squares:
        tail1 *= 2.0 * delta
        s2 += tail1
        s2 += count * (delta * delta)
    s1 += count * delta
    return anchor, s1, s2


def rolling_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last `window` values; NaN for the first window-1 bars."""
    n = len(x)
    out = _nans(n)
    if n < window:
        return out
    anchor, s1, _ = _anchored_window_moments(x, window, squares=False)
    s1 /= window
    s1 += anchor
    out[window - 1 :] = s1.ravel()[window - 1 : n]
    return out


def rolling_std(x: np.ndarray, window: int) -> np.ndarray:
    """Population (ddof=0) standard deviation of the last `window` values.

    var = (S2 - S1^2/w) / w over block-anchored sums (see above), clipped at 0 against rounding:
    about 1e-13 relative on typical prices, far better than pandas' online update; a window of
    1 gives exactly 0. NaN for the first window-1 bars.
    """
    n = len(x)
    out = _nans(n)
    if n < window:
        return out
    _, s1, s2 = _anchored_window_moments(x, window, squares=True)
    s1 *= s1
    s1 /= window
    s2 -= s1
    s2 /= window
    np.maximum(s2, 0.0, out=s2)
    np.sqrt(s2.ravel()[window - 1 : n], out=out[window - 1 :])
    return out


# Below this window, max/min over `window` shifted slices (one vectorized pass each) beats the
# block method, whose per-row accumulate calls dominate for short rows. Both are exact.
_SHIFTED_SLICES_MAX_WINDOW = 64


def _rolling_extreme(x: np.ndarray, window: int, ufunc: np.ufunc, pad: float) -> np.ndarray:
    n = len(x)
    if window == 1:
        return np.array(x, dtype=np.float64)
    out = _nans(n)
    if n < window:
        return out
    k = n - window + 1
    res = out[window - 1 :]
    if window <= _SHIFTED_SLICES_MAX_WINDOW:
        ufunc(x[:k], x[1 : k + 1], out=res)
        for j in range(2, window):
            ufunc(res, x[j : k + j], out=res)
        return out
    # van Herk / Gil-Werman: split into blocks of `window`; every window is the union of a block
    # suffix and the next block's prefix. O(n) whatever the window.
    m = -(-n // window)
    blocks = np.full(m * window, pad, dtype=np.float64)
    blocks[:n] = x
    blocks = blocks.reshape(m, window)
    prefix = ufunc.accumulate(blocks, axis=1).ravel()
    suffix = ufunc.accumulate(blocks[:, ::-1], axis=1)[:, ::-1].ravel()
    ufunc(suffix[:k], prefix[window - 1 : n], out=res)
    return out


def rolling_max(x: np.ndarray, window: int) -> np.ndarray:
    """Highest of the last `window` values, current included; NaN for the first window-1 bars."""
    return _rolling_extreme(x, window, np.maximum, -np.inf)


def rolling_min(x: np.ndarray, window: int) -> np.ndarray:
    """Lowest of the last `window` values, current included; NaN for the first window-1 bars."""
    return _rolling_extreme(x, window, np.minimum, np.inf)


def cutler_rsi(x: np.ndarray, window: int) -> np.ndarray:
    """Cutler's RSI: 100 * G / (G + L) with G, L the simple sums of gains and losses over the
    last `window` changes; 50 when both are zero; NaN for the first `window` bars."""
    n = len(x)
    out = _nans(n)
    if n <= window:
        return out
    change = np.subtract(x[1:], x[:-1])
    gains = np.maximum(change, 0.0)
    losses = np.maximum(np.negative(change, out=change), 0.0, out=change)
    # Block sums of non-negatives: every partial sum is monotone, so g, loss >= 0, and exactly 0
    # when the window has no gain (no loss).
    g = _window_sums(gains, window)
    total = _window_sums(losses, window)
    total += g
    with np.errstate(invalid="ignore"):
        res = np.divide(g, total, out=g)  # 0 / 0 -> NaN, replaced by 50 below
    res *= 100.0
    res[total == 0.0] = 50.0
    out[window:] = res
    return out


def rate_of_change(x: np.ndarray, window: int) -> np.ndarray:
    """100 * (x[i] - x[i-window]) / x[i-window]; NaN for the first `window` bars."""
    n = len(x)
    out = _nans(n)
    if n <= window:
        return out
    with np.errstate(divide="ignore", invalid="ignore"):
        out[window:] = 100.0 * (x[window:] - x[:-window]) / x[:-window]
    return out


# --- registered built-ins ------------------------------------------------------------------------


def _length(cols: Mapping[str, np.ndarray]) -> int:
    if "close" in cols:
        return len(cols["close"])
    for v in cols.values():
        return len(v)
    return 0


def _source(cols: Mapping[str, np.ndarray], source: Any) -> np.ndarray:
    if source not in FIELDS:
        raise ValueError(f"source must be one of {', '.join(FIELDS)}, got {source!r}")
    if source not in cols:
        raise ValueError(f"column {source!r} is missing from the bars")
    return np.asarray(cols[source], dtype=np.float64)


def _window(window: Any) -> int:
    if isinstance(window, bool) or not isinstance(window, int | np.integer):
        raise ValueError(f"window must be an integer, got {window!r}")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    return int(window)


@indicator("sma", builtin=True)
def _sma(cols: Mapping[str, np.ndarray], source: str, window: int) -> np.ndarray:
    return rolling_mean(_source(cols, source), _window(window))


@indicator("rsi", builtin=True)
def _rsi(cols: Mapping[str, np.ndarray], source: str, window: int) -> np.ndarray:
    return cutler_rsi(_source(cols, source), _window(window))


@indicator("highest", builtin=True)
def _highest(cols: Mapping[str, np.ndarray], source: str, window: int) -> np.ndarray:
    return rolling_max(_source(cols, source), _window(window))


@indicator("lowest", builtin=True)
def _lowest(cols: Mapping[str, np.ndarray], source: str, window: int) -> np.ndarray:
    return rolling_min(_source(cols, source), _window(window))


@indicator("roc", builtin=True)
def _roc(cols: Mapping[str, np.ndarray], source: str, window: int) -> np.ndarray:
    return rate_of_change(_source(cols, source), _window(window))


@indicator("stdev", builtin=True)
def _stdev(cols: Mapping[str, np.ndarray], source: str, window: int) -> np.ndarray:
    return rolling_std(_source(cols, source), _window(window))
