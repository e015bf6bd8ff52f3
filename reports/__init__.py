"""HTML reports and charts built from run directories."""
