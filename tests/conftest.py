"""Shared fixtures: real sample data, a demo bot, and a bot with a fresh backtest."""
from __future__ import annotations

from pathlib import Path

import pytest

import paper
from paper.engine.csvbars import parse_bars_csv

SAMPLE = Path(paper.__file__).parent / "sample_data"


@pytest.fixture(scope="session")
def eth_bars():
    """Real ETH-USD daily bars, parsed straight from the shipped CSV (no DB)."""
    return parse_bars_csv(SAMPLE / "ETH-USD-1d.csv", symbol="ETH-USD", timeframe="1d")


@pytest.fixture
def sample_data(db):
    from paper.services import sample_data_load

    return sample_data_load()


@pytest.fixture
def demo_bot(db):
    from bots.services import bot_create

    return bot_create(
        name="demo",
        strategy="sma_crossover",
        params={"fast": 10, "slow": 30},
        symbols=["ETH-USD"],
        timeframe="1d",
        risk={"max_drawdown_pct": 80},
    )
