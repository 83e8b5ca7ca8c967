"""Statistics, no study logic: metrics, paired, calibration, faithfulness."""
