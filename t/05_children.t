# Four child processes, one certificate: one responder request per renewal,
# not one per child (the lease in the shared cache); and every child takes
# up what one of them fetched, also when only nextUpdate differs.
use strict;
use warnings FATAL => 'all';
use Apache::Test;
use Apache::TestRequest qw(POST);
use lib 't/lib';
use RSTest;
use Time::HiRes qw(time sleep);

plan tests => 6;

my $pid = RSTest::slurp('t/logs/httpd.pid');
chomp $pid;
my @children = grep { /^\s*\d+\s+$pid\s*$/ } `ps -e -o pid=,ppid=`;
ok(@children == 4) or warn "# children: " . scalar(@children) . "\n";

my $V = 6;
RSTest::set_mode('count', 'good', $V);
my $start = time;
sleep 16;
my @t = map { $_->{t} } grep { $_->{t} >= $start } @{ RSTest::requests('count') };
my @gaps = map { $t[$_] - $t[$_ - 1] } 1 .. $#t;
printf "# %d requests in 16 s, gaps: %s\n", scalar @t, join(' ', map { sprintf '%.1f', $_ } @gaps);
# renewal at half of 6 s +-10 %: about every 3 s. Four fetching children
# would show up as requests a few milliseconds apart.
ok(@t >= 3);
ok(@t <= 10);   # renewal gaps can be 2.0 s: thisUpdate has whole seconds
ok(!grep { $_ < 1.0 } @gaps);
RSTest::set_mode('count', 'good', 6);

# Two responses with the same thisUpdate (it has whole seconds; here pinned)
# and a later nextUpdate for the second: every child must take the second,
# not only the child that fetched it.
my $id = RSTest::cert_id('count');
my $T = int(time) - 5;
# what each of 12 handshakes (spread over the 4 children) staples: its nextUpdates
sub next_updates { map { RSTest::handshake('count')->{next_update} // 0 } 1 .. 12 }
sub all_children_staple { my $n = shift; RSTest::wait_for(sub { !grep { $_ != $n } next_updates() }, 10, 0.2) }
RSTest::ctl_get("/_ctl/set?name=count&mode=good&validity=600&thisupdate=$T");
RSTest::refresh($id);
ok(all_children_staple($T + 600));
RSTest::ctl_get("/_ctl/set?name=count&mode=good&validity=3600&thisupdate=$T");
RSTest::refresh($id);
ok(all_children_staple($T + 3600))
    or warn "# nextUpdates stapled: @{[ map { $_ - $T } next_updates() ]} (after thisUpdate)\n";
# back to 6 s responses renewed every ~3 s, which later tests count on
RSTest::ctl_get("/_ctl/set?name=count&mode=good&validity=6&thisupdate=0");
RSTest::refresh($id);
RSTest::wait_for(sub { !grep { $_ > time + 60 } next_updates() }, 10, 0.2)
    or warn "# count still staples a long-lived response\n";
