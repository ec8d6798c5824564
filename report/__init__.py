"""spikeport.report."""
