"""spikeport.convert."""
