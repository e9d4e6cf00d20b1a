"""Provider switch (issue 6 item 2): a subscriber moves a service on one device from one provider to
another as a saga of jobs, make-before-break, compensating on failure (DESIGN §7)."""
