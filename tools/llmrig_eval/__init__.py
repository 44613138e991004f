"""llmrig's model evaluation (playbooks/evaluate.yml): a coding task set the project writes itself, model
completions through the endpoint, and each completion's tests run in a sandbox."""
