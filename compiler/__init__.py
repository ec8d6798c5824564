"""spikeport.compiler."""
