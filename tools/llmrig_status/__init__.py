"""`llmrig status`: what each inference host is doing now, read by playbooks/status.yml."""
