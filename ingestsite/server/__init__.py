"""serve.py's parts: options, the supervisor of server processes, and the in-process runner.

serve.py parses options (options.py) and picks a runner: with --processes above 1 the supervisor
(supervisor.py) starts that many `serve.py --child` processes; each of them, or the single
process of --processes 1, serves with runner.py on cheroot (connections.py adds the request
deadline). standalone.py starts what standalone mode embeds.
"""
