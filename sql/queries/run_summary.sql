-- Mean and spread over seeds of the headline metrics, per study, factor level and learner.
-- (rho is NaN where it is undefined, e.g. on a balanced subset: read as NULL here.)
WITH m AS (
    SELECT study, factor, level, model, top1, head_acc, tail_acc,
           CASE WHEN isnan(rho_acc) THEN NULL ELSE rho_acc END AS rho_acc,
           CASE WHEN isnan(rho_pred) THEN NULL ELSE rho_pred END AS rho_pred
    FROM run_metrics
)
SELECT study, factor, level, model, count(*) AS seeds,
       round(avg(top1), 3) AS top1, round(stddev_pop(top1), 3) AS top1_sd,
       round(avg(rho_acc), 3) AS rho_acc, round(avg(rho_pred), 3) AS rho_pred,
       round(stddev_pop(rho_pred), 3) AS rho_pred_sd,
       round(avg(head_acc), 3) AS head_acc, round(avg(tail_acc), 3) AS tail_acc
FROM m
GROUP BY ALL
ORDER BY study, factor, level, model;
