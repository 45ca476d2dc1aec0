-- The command line a try ran, after templating (issue 17: the instance page shows it per try).
-- NULL for tries recorded before this column existed.
ALTER TABLE attempts ADD COLUMN command TEXT;
