-- Graceful agent stop (issue 15): 1 while an agent drains (it takes no new work and lets its
-- running tries finish), from its heartbeats; 0 again when it registers.
ALTER TABLE agents ADD COLUMN draining BIGINT NOT NULL DEFAULT 0;
