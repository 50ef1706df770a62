"""The file-drop protocol of the landing zone: layout, verification, quarantine and the loaded-drop ledger.

Used by the Bronze telemetry asset, by the drop sensor and by the demo producer, so it depends on
nothing above `resources/`.
"""
