"""spikeport.hw_profiles."""
