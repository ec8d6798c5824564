"""spikeport.backends."""
