"""freqtrade's counterpart of the kernel's flipflop test strategy (tests/support/strategy_sources.py):
enter on a candle whose minute is even, exit on the next one, so that every pair trades every
two minutes on the 1m timeframe. No indicators: the bench measures the bot, not the strategy."""
from pandas import DataFrame

from freqtrade.strategy import IStrategy


class FlipFlop(IStrategy):
    INTERFACE_VERSION = 3
    timeframe = "1m"
    minimal_roi = {"0": 100.0}  # never: exits come from the signal
    stoploss = -0.99
    process_only_new_candles = True
    startup_candle_count = 2
    use_exit_signal = True

    def populate_indicators(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        dataframe["even"] = (dataframe["date"].dt.minute % 2 == 0).astype("int")
        return dataframe

    def populate_entry_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        dataframe["enter_long"] = dataframe["even"]
        return dataframe

    def populate_exit_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        dataframe["exit_long"] = 1 - dataframe["even"]
        return dataframe
