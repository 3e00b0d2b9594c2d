"""Predictive maintenance: rules over telemetry and DTC reports, alerts with a lifecycle.

See docs/maintenance.md.
"""

from cloud.maintenance.alerts import AlertBook, AlertError, Notification, UnknownAlertError
from cloud.maintenance.rules import (
    DtcStatus,
    Finding,
    MaintenanceConfig,
    MaintenanceInputError,
    MaintenanceMonitor,
    Normal,
    RuleConfigError,
    parse_maintenance_config,
)
from roadwave.contract.alerts import (
    ACKNOWLEDGED,
    ACTIVE,
    ALERT_SCHEMA_VERSION,
    CLEARED,
    Alert,
    AlertFormatError,
)

__all__ = [
    "ACKNOWLEDGED",
    "ACTIVE",
    "ALERT_SCHEMA_VERSION",
    "CLEARED",
    "Alert",
    "AlertBook",
    "AlertError",
    "AlertFormatError",
    "DtcStatus",
    "Finding",
    "MaintenanceConfig",
    "MaintenanceInputError",
    "MaintenanceMonitor",
    "Normal",
    "Notification",
    "RuleConfigError",
    "UnknownAlertError",
    "parse_maintenance_config",
]
