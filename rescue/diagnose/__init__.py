"""Diagnosis: normalised inputs, the rules (one module per family), findings and the report."""
