"""Forecast evaluation: scoring forecasts against later readings, replaying CGM files through forecasters, the twin's forecasts in closed-loop runs, and the oracle's floor."""
