{#- Personal data (PII) in Gold, driven by the column classification in the models' YAML.

    A column is personal data when its YAML entry says `meta: {pii: <category>}` (the same categories as
    `pii:` in assets/bronze/source_contracts.yaml). A Gold model selects its columns with
    `select_masking_pii(relation)`: every column documented in the model's YAML, in that order, with the
    PII ones masked. So classifying a column is a YAML change, and a documented column can never be
    published in clear by forgetting a macro call.

    How a category is masked (`pii_masking`): an e-mail becomes the sha256 of its lower-cased address
    (64 hex characters: still countable and joinable with other systems that hash e-mails the same way,
    but not readable); any other category is replaced by '[redacted]'. The hash is unsalted, so it
    pseudonymises rather than anonymises: whoever holds a list of addresses can match them. The clear
    values live only in Bronze, Silver staging and the restricted Gold schema (`gold_restricted`,
    models/marts/restricted/), whose prod grant is `grant_pii_reader`. -#}

{% macro pii_category(column_name, node=none) -%}
    {%- set node = node or model -%}
    {%- set column = node.columns.get(column_name) if node.columns else none -%}
    {{- return((column.meta or {}).get('pii') if column else none) -}}
{%- endmacro %}

{% macro pii_masking(category) -%}
    {{- return('hash' if category == 'email' else 'redact') -}}
{%- endmacro %}

{#- sha256 as lower-case hex: DuckDB's sha256 takes text and returns hex; Trino's takes varbinary. -#}
{% macro pii_hash(expression) -%}
    {{- return(adapter.dispatch('pii_hash', 'strata')(expression)) -}}
{%- endmacro %}

{% macro duckdb__pii_hash(expression) -%}
    sha256(lower({{ expression }}))
{%- endmacro %}

{% macro default__pii_hash(expression) -%}
    lower(to_hex(sha256(to_utf8(lower({{ expression }})))))
{%- endmacro %}

{% macro mask_pii(column_name, category) -%}
    {%- if pii_masking(category) == 'hash' -%}
        {{ pii_hash(column_name) }}
    {%- else -%}
        case when {{ column_name }} is null then null else '[redacted]' end
    {%- endif -%}
{%- endmacro %}

{#- The model's documented columns from `relation`, PII masked; a model without documented columns is
    a compile error (it would otherwise select nothing, or everything in clear). -#}
{% macro select_masking_pii(relation) -%}
    {%- if execute and not model.columns -%}
        {{ exceptions.raise_compiler_error(model.name ~ ": select_masking_pii needs the model's columns in its YAML") }}
    {%- endif -%}
    select
    {%- for name in model.columns %}
        {% set category = pii_category(name) -%}
        {%- if category -%}{{ mask_pii(name, category) }} as {{ name }}{%- else -%}{{ name }}{%- endif -%}
        {{- "," if not loop.last }}
    {%- endfor %}
    from {{ relation }}
{%- endmacro %}

{#- Prod (Trino): the restricted models are readable by the PII reader role only. Run as a post-hook,
    since `on_table_exists: replace` recreates the table on every build and Trino grants belong to a
    table. STRATA_PII_READER_ROLE names the role (default pii_reader); an empty value sends no grant
    (for a catalog whose access control is file-based or Ranger/OPA, where the rule lives there). -#}
{% macro grant_pii_reader() -%}
    {%- set role = env_var('STRATA_PII_READER_ROLE', 'pii_reader') -%}
    {%- if target.type == 'trino' and role -%}
        {%- if not modules.re.fullmatch('[A-Za-z_][A-Za-z0-9_]*', role) -%}
            {{ exceptions.raise_compiler_error("STRATA_PII_READER_ROLE must be a plain role name, got '" ~ role ~ "'") }}
        {%- endif -%}
        grant select on {{ this }} to role {{ role }}
    {%- endif -%}
{%- endmacro %}
