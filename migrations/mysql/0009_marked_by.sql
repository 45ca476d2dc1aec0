-- Who marked a force-passed instance success (issue 17): the principal, or local:USER when
-- authentication is off. NULL for instances that ran, and again once one is rerun.
ALTER TABLE instances ADD COLUMN marked_by VARCHAR(255);
