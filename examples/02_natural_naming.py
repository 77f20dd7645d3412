"""The trajectory tree: groups, comments, natural naming, shortcuts and fast access.

Nothing is stored here; the example only builds a tree in memory and looks around in it.
"""
import minipypet as pypet


def main():
    traj = pypet.Trajectory('traffic', comment='A tree to look around in')

    # Dotted names create the groups on the way; each node can carry a comment.
    traj.f_add_parameter_group('traffic', comment='Everything about the cars')
    traj.f_add_parameter('traffic.ncars', 42, comment='Number of cars')
    traj.f_add_parameter('traffic.speed', 13.9, comment='Speed in m/s')
    traj.f_add_parameter('weather.rain', False, comment='Is it raining?')
    # A leaf can also be attached like an attribute; '' takes the attribute's name.
    traj.par.weather.wind = pypet.Parameter('', 3.5, comment='Wind in m/s')
    traj.f_add_config('seed', 1234, comment='Random seed')
    traj.f_add_result('summary.jam', 0.25, comment='Fraction of time in a jam')
    traj.f_add_result('summary.cars', ncars_seen=40, mean_speed=12.1)

    print('The tree, breadth first:')
    for node in traj.f_iter_nodes():
        kind = 'leaf ' if node.v_is_leaf else 'group'
        print('  %s %-30s %s' % (kind, node.v_full_name, node.v_comment))

    # Natural naming walks the tree; `par` abbreviates `parameters`.
    print('traj.parameters.traffic.ncars =', traj.parameters.traffic.ncars)
    print("traj.par.traffic.ncars        =", traj.par.traffic.ncars)
    print("traj['traffic.ncars']         =", traj['traffic.ncars'])
    # Shortcuts skip groups; the shallowest match wins.
    print('traj.ncars (a shortcut)       =', traj.ncars)

    # Fast access: a parameter reads as its value, the node comes from f_get.
    node = traj.f_get('ncars')
    print('f_get gives the node: %r, full name %s, location %s'
          % (node, node.v_full_name, node.v_location))
    # A result with one item named like itself also reads as that item.
    print('traj.jam =', traj.jam)
    cars = traj.cars  # two items: the result itself comes back
    print('traj.cars.mean_speed =', cars.mean_speed, '| items:', cars.f_to_dict())

    # Two nodes with the same name at the same depth make a shortcut ambiguous.
    traj.f_add_parameter('bicycles.speed', 5.0)
    try:
        traj.speed
    except pypet.NotUniqueNodeError as exc:
        print('NotUniqueNodeError:', exc)
    print('traj.traffic.speed =', traj.traffic.speed)

    print("'traffic.ncars' in traj.par:", 'traffic.ncars' in traj.par)
    print('parameters as a dict:', traj.f_get_parameters(fast_access=True))
    print('nested:', traj.par.f_to_dict(fast_access=True, nested=True))


if __name__ == '__main__':
    main()
