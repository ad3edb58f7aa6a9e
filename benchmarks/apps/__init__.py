"""Programs the scenarios start: Granian RSGI apps (`noop`, `min_proxy`) and the in-process
driver of the gateway's app (`loop_driver`)."""
