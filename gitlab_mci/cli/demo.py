"""``gitlab-mci demo``: the whole story on the local simulator, no cloud account needed."""

from __future__ import annotations

import click

from gitlab_mci.errors import UserError


@click.command("demo")
@click.option("--verbose", "-v", is_flag=True, help="Also show every command and its output.")
@click.option("--plain", is_flag=True, help="Plain lines even on a terminal (always plain when CI is set).")
@click.option("--requests", "requests_", type=click.IntRange(10, 10000), default=40, show_default=True,
              help="Requests sent through the load balancer per check.")
@click.option("--takeover", is_flag=True,
              help="Instead: build the recipe's kubemci load balancer (HTTPS, on a reserved address) and take it "
                   "over with `lb takeover` while requests flow through it; fails if one request fails.")
def command(verbose: bool, plain: bool, requests_: int, takeover: bool) -> None:
    """Everything end to end on the simulator: deploy, load balancer, failover.

    Starts the simulator, deploys the app to prod1 and prod2 as the pipeline would, puts one global load balancer
    in front, sends traffic through it, fails prod1 and watches traffic move to prod2, heals it, and tears it all
    down.

    With --takeover: deploys the app the same way, builds the classic load balancer `kubemci create` made
    (`sim kubemci`: reserved address web-ip, uploaded certificate, HTTP and HTTPS), sends 40 requests/s through it,
    runs `lb takeover` (and once more, which must write nothing), checks the old chain is gone and the address
    kept, and prints the requests served and failed and the takeover's phases with their durations.

    Every expectation is checked; the exit status is 0 only when all of them hold.
    """
    fancy = False if plain else None
    if takeover:
        from gitlab_mci import demo_takeover

        report = demo_takeover.run(verbose=verbose, fancy=fancy)
        click.echo(demo_takeover.summary(report))
    else:
        from gitlab_mci import demo

        report = demo.run(verbose=verbose, fancy=fancy, requests=requests_)
        click.echo(demo.summary(report))
    if not report.ok:
        raise UserError("the demo failed (see above); run with --verbose for every command's output")
