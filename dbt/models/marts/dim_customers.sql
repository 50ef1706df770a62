-- Current state of every customer. Personal data is masked as its YAML classifies it (meta.pii,
-- macros/pii.sql); the clear values are in gold_restricted.dim_customers_unmasked.
{{ select_masking_pii(ref('stg_customers')) }}
