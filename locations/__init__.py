"""One file per code location, the entry point its code server loads (workspace.yaml locally, the Helm
chart's user deployments in prod). Each builds only its own location from definitions.py."""
