# Four child processes, one certificate: one responder request per renewal,
# not one per child (the lease in the shared cache).
use strict;
use warnings FATAL => 'all';
use Apache::Test;
use lib 't/lib';
use RSTest;
use Time::HiRes qw(time sleep);

plan tests => 4;

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
