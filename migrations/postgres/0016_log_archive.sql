-- Logs archived to object storage (issue 18). Once a try has ended, its log goes to one object
-- (log_object, a key under the coordinator's --log-archive) and its chunks leave log_chunks:
-- bytes before log_archived_bytes are read from the object, later ones (output that arrived
-- after the upload) from log_chunks until the next upload takes them too. log_archive_due is
-- set by every append and cleared by the upload that takes everything, so the archiver finds
-- its work through an index instead of scanning every try.
ALTER TABLE attempts ADD COLUMN log_archived_bytes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE attempts ADD COLUMN log_object TEXT;
ALTER TABLE attempts ADD COLUMN log_archived_at BIGINT;
ALTER TABLE attempts ADD COLUMN log_archive_due INTEGER NOT NULL DEFAULT 0;
UPDATE attempts SET log_archive_due = 1 WHERE log_bytes > 0;
CREATE INDEX attempts_log_archive_due ON attempts(log_archive_due);
