-- A worker's job also takes the same user's jobs queued right after it (worker.batch):
-- it looks them up by their lock (tenant/user) among the jobs still to do, in order.
-- procrastinate's own indexes lead with the job id, so with many users queueing at once
-- that look-up would step over every other user's jobs.
CREATE INDEX procrastinate_jobs_todo_lock_idx ON procrastinate_jobs (lock, id)
    WHERE status = 'todo';
