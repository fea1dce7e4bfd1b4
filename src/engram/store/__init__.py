"""All SQL: pool, migrations, embedded server, one repository per noun."""
