"""The reference deployment: 16 slots over 8 assets on 5m and 15m candles."""
from __future__ import annotations

from .protocol import SlotConfig

DEMO_ASSETS = ("BTC", "ETH", "SOL", "XRP", "ADA", "DOGE", "AVAX", "LINK")
DEMO_TIMEFRAMES = ("5m", "15m")
DEMO_STRATEGIES = ("ema_cross", "rsi_reversion", "breakout")


def demo_slots() -> list[SlotConfig]:
    """``btc-5m``: BTC/USDT on 5m candles, and so on; strategies assigned round-robin."""
    slots = []
    i = 0
    for asset in DEMO_ASSETS:
        for tf in DEMO_TIMEFRAMES:
            slots.append(
                SlotConfig(
                    id=f"{asset.lower()}-{tf}",
                    symbol=f"{asset}/USDT",
                    timeframe=tf,
                    strategy=DEMO_STRATEGIES[i % len(DEMO_STRATEGIES)],
                    order_notional=500.0,
                    max_notional=2_000.0,
                )
            )
            i += 1
    return slots
