"""results/ from the tables: summary (SUMMARY.md and the entry point), claims, details (DETAILS.md), verdicts,
figures, provenance, deviations."""
