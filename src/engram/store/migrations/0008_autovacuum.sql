-- The per-table autovacuum settings (config `autovacuum.*`) that 0001 and 0003 give their
-- tables, for the tenant tables added by 0005-0007 (`engram doctor` checks every one).
ALTER TABLE data_keys SET ({autovacuum});
ALTER TABLE reencrypt_runs SET ({autovacuum});
ALTER TABLE api_keys SET ({autovacuum});
ALTER TABLE audit_log SET ({autovacuum});
ALTER TABLE archives SET ({autovacuum});
ALTER TABLE erasure_receipts SET ({autovacuum});
ALTER TABLE retention_policies SET ({autovacuum});
