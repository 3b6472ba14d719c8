from gsm8k_bench import fleet
