# With mod_ssl's own "SSLUseStapling on" in the same vhost, this module
# answers and mod_ssl never fetches: no request of mod_ssl's reaches the
# responder, a hanging responder never stalls a handshake, and nothing
# mod_ssl would fabricate (tryLater) is ever stapled.
use strict;
use warnings FATAL => 'all';
use Apache::Test;
use lib 't/lib';
use RSTest;
use Time::HiRes qw(time sleep);

plan tests => 5;

my $h = RSTest::wait_for(sub { my $x = RSTest::handshake('coexist-ssl'); $x->{stapled} && $x }, 8);
ok($h && $h->{status} eq 'good' && $h->{resp_status} eq 'successful');

# mod_ssl would fetch in the handshake; the responder sees only our requests,
# each of which the error log accounts for (RS0201/RS0202 lines)
RSTest::handshake('coexist-ssl') for 1 .. 10;
my $requests = @{ RSTest::requests('coexist-ssl') };
my $ours = () = RSTest::error_log() =~ /RS020[12]: OCSP (?:response|fetch) for CN=coexist-ssl\.rs\.test,/g;
print "# responder requests $requests, fetches logged by the module $ours\n";
ok($requests == $ours);

# a hanging responder and an expiring response: mod_ssl would stall 10 s
# (its SSLStaplingResponderTimeout) and then staple a fabricated tryLater
RSTest::set_mode('coexist-ssl', 'hang');
my ($slowest, $trylater) = (0, 0);
for (1 .. 10) {
    my $x = RSTest::handshake('coexist-ssl');
    $slowest = $x->{elapsed} if $x->{elapsed} > $slowest;
    $trylater++ if ($x->{resp_status} // '') =~ /trylater/i;
}
ok($slowest < 0.5);
ok($trylater == 0);
ok(RSTest::error_log() !~ /AH0(1941|1955|1974|1985)/);  # mod_ssl's renew/connect/read errors
RSTest::set_mode('coexist-ssl', 'good');
