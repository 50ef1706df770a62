"""Partition definitions shared by Bronze and dbt assets, starting at the configured start date."""

from __future__ import annotations

from datetime import date

import dagster as dg


def hourly_partitions(start: date) -> dg.HourlyPartitionsDefinition:
    return dg.HourlyPartitionsDefinition(start_date=f"{start:%Y-%m-%d}-00:00", timezone="UTC")


def daily_partitions(start: date) -> dg.DailyPartitionsDefinition:
    return dg.DailyPartitionsDefinition(start_date=f"{start:%Y-%m-%d}", timezone="UTC")


def weekly_partitions(start: date) -> dg.WeeklyPartitionsDefinition:
    """ISO weeks, Monday to Sunday (UTC); the first is the first whole week from `start`."""
    return dg.WeeklyPartitionsDefinition(start_date=f"{start:%Y-%m-%d}", day_offset=1, timezone="UTC")
